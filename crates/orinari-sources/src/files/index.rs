//! The full-text index of one files source: tantivy with BM25 over one
//! field (title, headings and text) analysed by the English stemmer
//! (`en_stem`); title, headings and text are stored apart for the hit. One
//! document per chunk; a file's chunks share its relative path, the term
//! they are replaced and deleted by. Each chunk also carries the hash of
//! the text a dense index embeds for it ([`embed_text`]), a fast field that
//! the vectors are keyed and looked up by.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use crate::connector::Hit;

use super::chunk::Chunk;

/// Memory the writer may buffer before it flushes a segment.
const WRITER_MEMORY: usize = 50_000_000;

/// Distinct query terms searched at most (a pasted essay stays fast).
const MAX_QUERY_TERMS: usize = 64;

#[derive(Clone, Copy)]
struct Fields {
    path: Field,
    title: Field,
    heading: Field,
    text: Field,
    /// Title, headings and text together: the one field searched. One
    /// posting list per term instead of three keeps top-k fast.
    body: Field,
    /// xxh3 of the chunk's [`embed_text`]: what its vector is keyed by.
    hash: Field,
}

/// What a dense index embeds for a chunk: its title, heading path and
/// text, as BM25 searches them.
pub(crate) fn embed_text(title: &str, locator: &str, text: &str) -> String {
    format!("{title}\n{locator}\n{text}")
}

/// A chunk's key: the xxh3 of its [`embed_text`].
pub(crate) fn chunk_hash(embedded: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(embedded.as_bytes())
}

/// The index, its reader, and its fields.
pub(crate) struct ChunkIndex {
    index: Index,
    reader: IndexReader,
    f: Fields,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stemmed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("en_stem")
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let f = Fields {
        path: b.add_text_field("path", STRING | STORED),
        title: b.add_text_field("title", STORED),
        heading: b.add_text_field("heading", STORED),
        text: b.add_text_field("text", STORED),
        body: b.add_text_field("body", stemmed),
        hash: b.add_u64_field("hash", INDEXED | FAST),
    };
    (b.build(), f)
}

impl ChunkIndex {
    /// Open the index in `dir`, creating it (or recreating it, when it is
    /// unreadable or has another schema) as needed. Returns whether it was
    /// created empty.
    pub fn open(dir: &Path) -> Result<(ChunkIndex, bool), String> {
        let (schema, f) = schema();
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the index folder {}: {e}", dir.display()))?;
        let existing = dir.join("meta.json").is_file();
        let opened = if existing {
            match Index::open_in_dir(dir) {
                Ok(i) if i.schema() == schema => Some(i),
                Ok(_) | Err(_) => None,
            }
        } else {
            None
        };
        let fresh = opened.is_none();
        let index = match opened {
            Some(i) => i,
            None => {
                if existing {
                    // Another version's or a damaged index: rebuilt from the files.
                    std::fs::remove_dir_all(dir)
                        .and_then(|()| std::fs::create_dir_all(dir))
                        .map_err(|e| format!("cannot reset the index {}: {e}", dir.display()))?;
                }
                Index::create_in_dir(dir, schema)
                    .map_err(|e| format!("cannot create the index {}: {e}", dir.display()))?
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| format!("cannot read the index: {e}"))?;
        Ok((ChunkIndex { index, reader, f }, fresh))
    }

    /// The one writer (the index folder is locked while it lives).
    pub fn writer(&self) -> Result<Writer, IndexOpenError> {
        let w = self
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => {
                    IndexOpenError::Busy("another indexer holds the index".into())
                }
                e => IndexOpenError::Failed(format!("cannot open the index for writing: {e}")),
            })?;
        Ok(Writer { w, f: self.f })
    }

    /// Make the last commit visible to searches.
    pub fn reload(&self) -> Result<(), String> {
        self.reader
            .reload()
            .map_err(|e| format!("cannot reload the index: {e}"))
    }

    /// Chunks in the index.
    pub fn chunks(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The best `k` chunks for `query` by BM25 over title, headings and text.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, String> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut analyzer = self
            .index
            .tokenizer_for_field(self.f.body)
            .map_err(|e| format!("no analyzer: {e}"))?;
        let mut stream = analyzer.token_stream(query);
        let mut seen = std::collections::HashSet::new();
        while stream.advance() {
            let t = stream.token().text.clone();
            if seen.len() < MAX_QUERY_TERMS && seen.insert(t.clone()) {
                clauses.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(self.f.body, &t),
                        IndexRecordOption::WithFreqs,
                    )),
                ));
            }
        }
        if clauses.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(
                &BooleanQuery::new(clauses),
                &TopDocs::with_limit(k).order_by_score(),
            )
            .map_err(|e| format!("search failed: {e}"))?;
        top.into_iter()
            .map(|(score, address)| self.hit(&searcher, address, score))
            .collect()
    }

    /// The stored chunk at `address`, as a hit with `score`.
    fn hit(&self, searcher: &Searcher, address: DocAddress, score: f32) -> Result<Hit, String> {
        let doc: TantivyDocument = searcher
            .doc(address)
            .map_err(|e| format!("cannot read a stored chunk: {e}"))?;
        let get = |f: Field| {
            doc.get_first(f)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Ok(Hit {
            document: get(self.f.path),
            title: get(self.f.title),
            locator: get(self.f.heading),
            url: None,
            text: get(self.f.text),
            score,
        })
    }

    /// The current commit, for reads that must agree with each other.
    pub fn snapshot(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Every live chunk's hash in `searcher`, with where one chunk of that
    /// hash is (identical chunks share a hash: one address each).
    pub fn hashes(&self, searcher: &Searcher) -> Result<Vec<(u64, DocAddress)>, String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let column = segment
                .fast_fields()
                .u64("hash")
                .map_err(|e| format!("cannot read chunk hashes: {e}"))?;
            let segment_ord = u32::try_from(ord).map_err(|_| "too many segments".to_string())?;
            for doc in segment.doc_ids_alive() {
                if let Some(h) = column.first(doc)
                    && seen.insert(h)
                {
                    out.push((h, DocAddress::new(segment_ord, doc)));
                }
            }
        }
        Ok(out)
    }

    /// What a dense index embeds for the chunk at `address`.
    pub fn embed_text_at(
        &self,
        searcher: &Searcher,
        address: DocAddress,
    ) -> Result<String, String> {
        let h = self.hit(searcher, address, 0.0)?;
        Ok(embed_text(&h.title, &h.locator, &h.text))
    }

    /// The chunks of these hashes (best first, as given), with their scores;
    /// hashes no longer in the index are skipped, and identical chunks of
    /// several files each give a hit.
    pub fn by_hashes(&self, hashes: &[(u64, f32)], k: usize) -> Result<Vec<Hit>, String> {
        let searcher = self.reader.searcher();
        let mut hits = Vec::with_capacity(k.min(hashes.len()));
        for &(h, score) in hashes {
            if hits.len() >= k {
                break;
            }
            let query = TermQuery::new(
                Term::from_field_u64(self.f.hash, h),
                IndexRecordOption::Basic,
            );
            let found = searcher
                .search(
                    &query,
                    &TopDocs::with_limit(k - hits.len()).order_by_score(),
                )
                .map_err(|e| format!("search failed: {e}"))?;
            for (_, address) in found {
                hits.push(self.hit(&searcher, address, score)?);
            }
        }
        Ok(hits)
    }
}

/// Why the writer could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexOpenError {
    /// Its lock is held (by the indexer this one replaces).
    #[error("{0}")]
    Busy(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// Changes to the index, visible to searches after `commit` and a reload.
pub(crate) struct Writer {
    w: IndexWriter,
    f: Fields,
}

impl Writer {
    /// Replace a file's chunks (none: the file is gone from the index).
    pub fn put(&mut self, rel: &str, title: &str, chunks: &[Chunk]) -> Result<(), String> {
        self.delete(rel);
        for c in chunks {
            let embedded = embed_text(title, &c.locator, &c.text);
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.f.hash, chunk_hash(&embedded));
            doc.add_text(self.f.path, rel);
            doc.add_text(self.f.title, title);
            doc.add_text(self.f.heading, &c.locator);
            doc.add_text(self.f.text, &c.text);
            doc.add_text(self.f.body, embedded);
            self.w
                .add_document(doc)
                .map_err(|e| format!("cannot add to the index: {e}"))?;
        }
        Ok(())
    }

    /// Remove a file's chunks.
    pub fn delete(&mut self, rel: &str) {
        self.w.delete_term(Term::from_field_text(self.f.path, rel));
    }

    /// Remove everything.
    pub fn clear(&mut self) -> Result<(), String> {
        self.w
            .delete_all_documents()
            .map(|_| ())
            .map_err(|e| format!("cannot clear the index: {e}"))
    }

    /// Make the changes durable.
    pub fn commit(&mut self) -> Result<(), String> {
        self.w
            .commit()
            .map(|_| ())
            .map_err(|e| format!("cannot commit the index: {e}"))
    }
}

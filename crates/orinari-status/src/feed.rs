//! An Atom feed (RFC 4287) of incidents and maintenances, newest first, one
//! entry per incident with its latest update.

use std::fmt::Write;

use crate::service::Snapshot;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// The feed document.
pub fn atom(s: &Snapshot) -> String {
    let clock = &s.page.clock;
    let mut items: Vec<_> = s.incidents.iter().chain(s.maintenances.iter()).collect();
    items.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
    let mut out = String::new();
    let url = esc(&s.page.url);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
         <id>{url}</id>\n<title>{} status</title>\n<updated>{}</updated>\n\
         <link rel=\"alternate\" type=\"text/html\" href=\"{url}\"/>\n\
         <link rel=\"self\" type=\"application/atom+xml\" href=\"{url}/feed.atom\"/>\n\
         <author><name>{}</name></author>\n",
        esc(&s.page.name),
        clock.format(s.updated_at),
        esc(&s.page.name),
    );
    for i in items {
        let kind = if i.kind == "maintenance" {
            "Maintenance"
        } else {
            "Incident"
        };
        let mut content = String::new();
        for u in &i.updates {
            let _ = writeln!(
                content,
                "{} — {}: {}",
                clock.human(u.created_at),
                u.status.replace('_', " "),
                u.body
            );
        }
        let _ = write!(
            out,
            "<entry>\n<id>{url}#{id}</id>\n<title>{kind}: {name} ({status})</title>\n\
             <updated>{updated}</updated>\n<published>{published}</published>\n\
             <link rel=\"alternate\" type=\"text/html\" href=\"{url}#{id}\"/>\n\
             <content type=\"text\">{content}</content>\n</entry>\n",
            id = esc(&i.id),
            name = esc(&i.name),
            status = esc(&i.status.replace('_', " ")),
            updated = clock.format(i.updated_at),
            published = clock.format(i.created_at),
            content = esc(content.trim_end()),
        );
    }
    out.push_str("</feed>\n");
    out
}

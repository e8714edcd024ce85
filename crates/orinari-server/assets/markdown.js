// Safe Markdown for answers: a small subset built with DOM nodes only.
// No string ever reaches an HTML parser (the page enforces Trusted Types),
// so model output cannot inject markup or script. Supported: paragraphs,
// line breaks, fenced code (with a copy button), `inline code`, **bold**,
// *italic*, bullet and numbered lists, and http(s) links.

const el = (tag, cls) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  return e;
};

const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|(?:\*|_)(?=\S)([^*_]*?\S)(?:\*|_)|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;

function inline(parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    if (m[1]) {
      const c = el('code');
      c.textContent = m[2];
      parent.append(c);
    } else if (m[3] !== undefined) {
      const b = el('strong');
      inline(b, m[3]);
      parent.append(b);
    } else if (m[4] !== undefined) {
      const i = el('em');
      inline(i, m[4]);
      parent.append(i);
    } else {
      const a = el('a');
      a.href = m[6];
      a.rel = 'noopener noreferrer nofollow';
      a.textContent = m[5];
      parent.append(a);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function lines(parent, text) {
  text.split('\n').forEach((line, i) => {
    if (i) parent.append(el('br'));
    inline(parent, line);
  });
}

function codeBlock(code, lang, copy) {
  const wrap = el('div', 'codeblock');
  const pre = el('pre');
  const c = el('code');
  c.textContent = code;
  if (lang) c.dataset.lang = lang;
  pre.append(c);
  const b = el('button');
  b.type = 'button';
  b.textContent = 'Copy code';
  b.addEventListener('click', () => copy(code, b));
  wrap.append(pre, b);
  return wrap;
}

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBER = /^\s*\d{1,9}[.)]\s+(.*)$/;

/** Render `text` into a fragment; `copy(text, button)` copies code blocks. */
export function render(text, copy) {
  const out = document.createDocumentFragment();
  const src = text.replace(/\r\n?/g, '\n').split('\n');
  let para = [];
  const flush = () => {
    if (para.length) {
      const p = el('p');
      lines(p, para.join('\n'));
      out.append(p);
      para = [];
    }
  };
  for (let i = 0; i < src.length; i++) {
    const line = src[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+-]*)\s*$/);
    if (fence) {
      flush();
      const body = [];
      i++;
      while (i < src.length && !src[i].trim().startsWith(fence[1])) body.push(src[i++]);
      out.append(codeBlock(body.join('\n'), fence[2], copy));
      continue;
    }
    const kind = BULLET.test(line) ? 'ul' : NUMBER.test(line) ? 'ol' : null;
    if (kind) {
      flush();
      const list = el(kind);
      const re = kind === 'ul' ? BULLET : NUMBER;
      while (i < src.length && re.test(src[i])) {
        const li = el('li');
        inline(li, src[i].match(re)[1]);
        list.append(li);
        i++;
      }
      i--;
      out.append(list);
      continue;
    }
    const heading = line.match(/^\s*#{1,6}\s+(.*)$/);
    if (heading) {
      flush();
      const p = el('p');
      const s = el('strong');
      inline(s, heading[1]);
      p.append(s);
      out.append(p);
      continue;
    }
    if (line.trim() === '') flush();
    else para.push(line);
  }
  flush();
  return out;
}

import http from 'node:http';
const [base, enc = 'identity', n = 3000] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const one = () => new Promise((res, rej) => {
  const t0 = process.hrtime.bigint();
  http.get(base, { agent, headers: { 'accept-encoding': enc } }, (r) => {
    const ttfb = Number(process.hrtime.bigint() - t0) / 1e6;
    r.resume(); r.on('end', () => res(ttfb));
  }).on('error', rej);
});
for (let i = 0; i < 200; i++) await one();
const xs = [];
for (let i = 0; i < n; i++) xs.push(await one());
xs.sort((a, b) => a - b);
const p = (q) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))].toFixed(2);
console.log(`${base} ${enc}: n=${n} p50=${p(0.5)} ms p90=${p(0.9)} ms p99=${p(0.99)} ms max=${p(1)} ms`);

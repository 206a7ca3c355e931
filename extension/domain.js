// Registrable domains ("eTLD+1") for matching entries to the current site. A match is on the
// whole registrable domain, never a substring: login.example.com and example.com match,
// evil-example.com and example.com.evil.net do not. IP addresses and single-label hosts
// (localhost) match only themselves.
//
// The public suffix list is a bundled subset (no network, no update service): every single-label
// TLD is a suffix by rule, plus the multi-label suffixes below (second-level country suffixes
// such as co.uk and com.au, and shared hosting domains where each subdomain belongs to someone
// else, such as github.io). A multi-label suffix missing here makes two sites under it look like
// one site: add it here.
'use strict';
(() => {
  const MULTI_LABEL_SUFFIXES = new Set([
    // United Kingdom, Australia, New Zealand, Japan, Korea
    'co.uk', 'org.uk', 'me.uk', 'ltd.uk', 'plc.uk', 'net.uk', 'ac.uk', 'gov.uk', 'sch.uk', 'nhs.uk', 'police.uk',
    'com.au', 'net.au', 'org.au', 'edu.au', 'gov.au', 'asn.au', 'id.au',
    'co.nz', 'net.nz', 'org.nz', 'govt.nz', 'ac.nz', 'school.nz',
    'co.jp', 'ne.jp', 'or.jp', 'ac.jp', 'go.jp', 'ed.jp', 'gr.jp', 'lg.jp',
    'co.kr', 'or.kr', 'ne.kr', 'go.kr', 'ac.kr',
    // Americas
    'com.br', 'net.br', 'org.br', 'gov.br', 'edu.br', 'com.mx', 'org.mx', 'gob.mx', 'edu.mx', 'com.ar', 'gob.ar',
    'com.co', 'gov.co', 'com.pe', 'com.ve', 'com.uy', 'com.ec', 'com.bo', 'com.py', 'co.cr',
    // Asia, Middle East, Africa, Europe
    'com.cn', 'net.cn', 'org.cn', 'gov.cn', 'edu.cn', 'com.hk', 'org.hk', 'com.tw', 'org.tw', 'com.sg', 'edu.sg',
    'com.my', 'co.in', 'net.in', 'org.in', 'firm.in', 'gen.in', 'ind.in', 'gov.in', 'ac.in', 'co.id', 'or.id',
    'ac.id', 'go.id', 'com.ph', 'com.vn', 'co.th', 'in.th', 'ac.th', 'com.pk', 'com.bd', 'com.np', 'com.lk',
    'co.il', 'org.il', 'ac.il', 'gov.il', 'com.tr', 'gov.tr', 'com.sa', 'com.eg', 'com.ng', 'co.ke', 'co.za',
    'org.za', 'gov.za', 'web.za', 'com.ua', 'com.pl', 'net.pl', 'org.pl', 'com.gr', 'com.cy', 'com.mt', 'co.at',
    'or.at', 'ac.at', 'gv.at', 'com.es', 'org.es', 'com.pt', 'co.hu', 'com.ru', 'org.ru',
    // Shared hosting: every subdomain is its own site.
    'github.io', 'gitlab.io', 'pages.dev', 'workers.dev', 'netlify.app', 'vercel.app', 'web.app',
    'firebaseapp.com', 'herokuapp.com', 'appspot.com', 'blogspot.com', 'azurewebsites.net', 'cloudfront.net',
    'fly.dev', 'onrender.com', 'glitch.me', 's3.amazonaws.com', 'compute.amazonaws.com',
  ]);

  const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

  // The registrable domain of a host name (lowercase, no trailing dot), or null when the host
  // is itself a public suffix (nothing registrable to match).
  function registrableDomain(host) {
    let h = String(host || '').toLowerCase();
    if (h.endsWith('.')) h = h.slice(0, -1);
    if (!h) return null;
    if (h.startsWith('[') || IPV4.test(h) || !h.includes('.')) return h;
    const labels = h.split('.');
    if (labels.some((l) => l === '')) return null;
    for (const n of [3, 2]) {
      if (labels.length >= n && MULTI_LABEL_SUFFIXES.has(labels.slice(-n).join('.'))) {
        return labels.length > n ? labels.slice(-(n + 1)).join('.') : null;
      }
    }
    return labels.slice(-2).join('.');
  }

  // The registrable domain of a URL's host, for http(s) URLs only; null otherwise.
  function siteOf(url) {
    let u;
    try {
      u = new URL(String(url));
    } catch (_) {
      return null;
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return null;
    return registrableDomain(u.hostname);
  }

  globalThis.ClavitorDomain = { registrableDomain, siteOf };
})();

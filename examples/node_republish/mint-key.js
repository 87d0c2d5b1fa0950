// The one change your Node app needs: a signed stream key where the URL had SESSION_SLUG.
// The edge accepts rtmp://RTMP_HOST:RTMP_PORT/live/KEY only if KEY verifies with RELAY_SECRET, and
// the stream then reaches your RTMP server as rtmp://127.0.0.1:1935/live/SESSION_SLUG, unchanged.
// Same algorithm as relay_edge/keys.py: NAME.EXPIRY.SIG, SIG = base64url(HMAC-SHA256(
// HMAC-SHA256(secret, "rtmp-relay/stream-key"), "NAME.EXPIRY")[0:16]).
//
//   const { mintKey } = require("./mint-key");
//   const url = `rtmp://${process.env.RTMP_HOST}:${process.env.RTMP_PORT}/live/${mintKey(slug)}`;
//
// Command line (for a quick test): node mint-key.js NAME [TTL_SECONDS]
"use strict";
const crypto = require("node:crypto");

function mintKey(name, ttlSeconds = 86400, secret = process.env.RELAY_SECRET) {
  if (!secret) throw new Error("RELAY_SECRET is not set");
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) throw new Error(`stream name must be 1-64 of A-Z a-z 0-9 _ -: ${name}`);
  const expiry = Math.floor(Date.now() / 1000 + ttlSeconds);
  const derived = crypto.createHmac("sha256", secret).update("rtmp-relay/stream-key").digest();
  const mac = crypto.createHmac("sha256", derived).update(`${name}.${expiry}`).digest();
  return `${name}.${expiry}.${mac.subarray(0, 16).toString("base64url")}`;
}

module.exports = { mintKey };

if (require.main === module) {
  console.log(mintKey(process.argv[2], process.argv[3] ? Number(process.argv[3]) : undefined));
}

// A TLS-terminating proxy for the browser tests, as an operator puts one in
// front of `addonhost serve --url https://…`: https on a free port of
// 127.0.0.1 with the certificate and key given, every request forwarded as
// it came (its Host header included) to the server on 127.0.0.1.
// Usage: node tls-proxy.mjs CERT KEY
// Prints the port it listens on, then reads the server's port from stdin.
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import readline from "node:readline";

const [cert, key] = process.argv.slice(2);
let upstream = null;

const server = https.createServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key) },
  (req, res) => {
    if (upstream === null) {
      res.writeHead(503);
      res.end("no upstream yet\n");
      return;
    }
    const forward = http.request(
      { host: "127.0.0.1", port: upstream, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", (e) => {
      res.writeHead(502);
      res.end(`upstream: ${e}\n`);
    });
    req.pipe(forward);
  },
);
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  upstream = Number(line.trim());
});

import { defineConfig } from "vite";

// Only the environment is needed from Node here; this avoids depending on @types/node.
declare const process: { env: Record<string, string | undefined> };

// `npm run dev` serves the client with hot reload and forwards the WebSocket (and any
// HTTP API) to a running worldstream server, so the page behaves as if the server
// served it. Point it elsewhere with WORLDSTREAM_SERVER=http://host:port.
const server = process.env.WORLDSTREAM_SERVER ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
  },
  server: {
    host: "127.0.0.1",
    port: 5173,
    proxy: {
      "/ws": { target: server, ws: true, changeOrigin: true },
      "/api": { target: server, changeOrigin: true },
    },
  },
});

import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The build is served by the API (serving/routes/web.py) from frontend/dist: same origin, no CDN.
export default defineConfig({
  plugins: [react()],
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1500 },
});

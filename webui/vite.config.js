import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// locust renders dist/index.html as a Jinja template (its template_args go into
// window.templateArgs) and serves dist/assets/ at /assets/.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 4000 },
});

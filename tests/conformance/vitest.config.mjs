import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    setupFiles: ["./auth-setup.mjs"],
    // The suite's own package ships TypeScript sources; let vitest transform them.
    server: { deps: { inline: [/@durable-streams/] } },
  },
})

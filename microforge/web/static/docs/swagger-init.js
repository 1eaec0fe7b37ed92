// Starts Swagger UI (shipped by the fastapi-offline package, served from /docs-assets) on
// this server's OpenAPI document. A file of its own because the page's
// Content-Security-Policy forbids inline scripts.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});

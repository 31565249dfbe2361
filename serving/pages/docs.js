// Swagger UI over this server's own OpenAPI document; no online validator (nothing leaves the server).
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
});

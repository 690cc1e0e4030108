"""HTTP API v1 (aiohttp): routes, request/response schemas, auth and problem documents."""

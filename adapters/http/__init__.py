"""The HTTP server: the app factory (`app`), the /v1 JSON API (`api`), Telegram's webhook
(`telegram`), health, authentication (`guards`), request and response bodies (`bodies`),
errors, settings and the request log. Its pieces come from the composition root."""

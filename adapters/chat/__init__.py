"""Chat adapters: the transport-neutral bot (`bot`), Telegram's webhook format (`telegram`),
the HTTP server (`http`) and the terminal chat, all driving the same Engine commands."""

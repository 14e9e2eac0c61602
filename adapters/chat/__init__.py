"""Chat adapters: the transport-neutral bot (`bot`), Telegram's update format (`telegram`),
the Bot API and Cloud API clients that deliver replies, all driving the same Engine
commands; the HTTP server that takes the webhooks is `adapters.http`."""

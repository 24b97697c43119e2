"""`stylefold web`: a read-only page that watches the daemon work (queue, live previews, a
gallery of results, the style library, health), served by a process of its own.

It reads what the daemon already publishes (`state/status.json`, the state database, the
outbox and the style library) and writes nothing but its thumbnail cache, so it can neither take
the daemon down nor change a job. Starlette, uvicorn and Jinja2 are the optional `web` extra.
"""

"""A reference chat app built on Threadgate, as an app builder would ship it (`make chat`).

`app.py` is the app's own small backend: it holds the gateway's admin ("master") key and never
sends it to a browser. On sign-up it mints a capped key bound to the new end user and a first
thread; the browser talks only to this backend (a session cookie), which calls the gateway with
that end user's key and relays the SSE stream as it comes. `static/` is the chat page.
"""

"""How long the agent trusts a quiet API connection (constants, not config keys: they follow
the API server's behaviour, not the site's).

A watch asks for bookmarks (allowWatchBookmarks=true); kube-apiserver's watch cache sends one
about every minute on an idle watch, so a healthy watch is never silent for much longer. A
watch silent for WATCH_SILENCE_SECONDS is presumed dead (a half-open TCP connection, a wedged
proxy) and re-opened from the last resourceVersion: without this it was noticed only by the
read timeout, up to 2 x watch_timeout + 30 s (630 s), while the status said "connected".
"""

WATCH_SILENCE_SECONDS = 120.0  # twice the apiserver's bookmark period: one lost bookmark is fine
# Health is "degraded" when nothing (list, event, bookmark) has arrived for this long: the
# watchdog re-opened the watch and even the new one brings nothing.
CONTACT_STALE_SECONDS = 2 * WATCH_SILENCE_SECONDS

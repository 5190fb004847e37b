"""Resilience actors: breakers, the rate limiter, proxies, Hold, alerts and each node's view of them."""

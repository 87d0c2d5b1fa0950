"""Helpers for end-to-end tests and benchmarks: media, real publishers, nginx-rtmp, loopback networking."""

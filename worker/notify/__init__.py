"""Outbound notifications: event payload models (`events`) and signed webhook delivery with its SSRF
guard (`webhooks`). No model or pipeline imports, so the API can use both."""

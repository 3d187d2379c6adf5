"""The web app: staff pages, the JSON API, webhooks, health and metrics, on FastAPI."""

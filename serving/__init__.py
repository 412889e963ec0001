"""FastAPI serving layer. Nothing imports this package; uvicorn loads `serving.app:create_app`."""

"""`voxtral serve`: one model, one engine, OpenAI-compatible HTTP and a vLLM-compatible realtime websocket.

    from voxtral.serve.app import create_app, run
    from voxtral.serve.options import ServeOptions
    app = create_app(voxtral.load(...), ServeOptions(model_id="voxtral-mini-4b-realtime"))
    run(app, host="127.0.0.1", port=8000)      # uvicorn; SIGTERM drains (see run)

Routes: POST /v1/audio/transcriptions, GET /v1/models, GET /health, GET /metrics (http.py), websocket
/v1/realtime (realtime.py), put together in app.py; options.py holds the settings (no dependencies: the
command line reads its defaults there). Every upload and realtime session is a job of the model's one
scheduler, batched together by it (state.py, pump.py). Needs the `serve` extra (Starlette, uvicorn,
websockets, python-multipart, prometheus-client).
"""

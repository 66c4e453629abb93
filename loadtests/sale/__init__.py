"""The live-sale load test: Locust user classes, their WebSocket client and their data.

``loadtests/locustfile.py`` exposes the user classes to Locust; ``loadtests/run.py``
prepares the data, starts the service and runs Locust; ``loadtests/check_budget.py``
checks Locust's CSV against ``loadtests/budget.toml``.
"""

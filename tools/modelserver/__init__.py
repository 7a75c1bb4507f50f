"""The reference model server: a scikit-learn iris classifier over HTTP.

:mod:`tools.modelserver.server` trains and serves it (``batch-runner serve-model``) in the raw,
v1 and v2 protocols the consumer speaks; :mod:`tools.modelserver.iris_data` samples iris rows
for the demo and the examples; :mod:`tools.modelserver.http_serving` runs an aiohttp
application on the running event loop (the test servers use it too).
"""

"""Checks CI runs beside the tests (not part of the wheel).

:mod:`tools.ci_checks.validate_deploy` validates the Kubernetes manifests offline (``make
deploy-check``); :mod:`tools.ci_checks.docker` runs the Docker path for real (``make
docker-check``).
"""

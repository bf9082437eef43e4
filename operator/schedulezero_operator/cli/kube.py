"""The plugin's few API calls, through the ``kubernetes`` client, with kubectl's config rules.

Why a small wrapper: the verbs need four things (get, list, merge-patch, watch one
object) and the same connection rules kubectl uses (``--kubeconfig``, ``--context``,
the context's namespace, in-cluster config inside a pod). Keeping them here lets
the verbs read as what they do, and turns API errors into kubectl-style messages
instead of tracebacks. The ``kubernetes`` package is imported on first use, so
``kubectl sz cron`` (which needs no cluster) starts fast and works without one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..api.models import GROUP, VERSION

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
KINDS = {"schedules": "schedule", "handlers": "handler"}


class CliError(Exception):
    """A failure to report in one line and exit with ``code`` (no traceback)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Kube:
    """A connection to one cluster (the kubeconfig context), and its default namespace."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        try:
            from kubernetes import client, config
        except ImportError:
            raise CliError("error: kubectl sz needs the kubernetes client: "
                           "pip install 'schedulezero[cli]'") from None

        self._client = client
        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as e:
            if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise CliError(f"error: cannot load kubeconfig: {e}") from None
            config.load_incluster_config()  # inside a pod, as kubectl does
            self.api = client.ApiClient()
            self.namespace = (SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists()
                              else "default")
        else:
            chosen = active
            if context:
                chosen = next((c for c in contexts if c.get("name") == context), None)
                if chosen is None:
                    raise CliError(f'error: context "{context}" does not exist')
            try:
                self.api = config.new_client_from_config(config_file=kubeconfig,
                                                         context=context)
            except config.ConfigException as e:
                raise CliError(f"error: cannot load kubeconfig: {e}") from None
            self.namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise CliError(api_error(e, what)) from None
        except (HTTPError, OSError) as e:
            raise CliError(f"error: cannot reach the API server: {e}") from None

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self._call(f'{plural}.{GROUP} "{name}"', self.custom.get_namespaced_custom_object,
                         GROUP, VERSION, namespace, plural, name)
        return dict(obj)

    def list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of one kind in ``namespace``, or in all namespaces when it is None."""
        if namespace is None:
            body = self._call(f"{plural}.{GROUP}", self.custom.list_cluster_custom_object,
                              GROUP, VERSION, plural)
        else:
            body = self._call(f"{plural}.{GROUP}", self.custom.list_namespaced_custom_object,
                              GROUP, VERSION, namespace, plural)
        return [dict(item) for item in body.get("items") or []]

    def merge_patch(self, plural: str, namespace: str, name: str,
                    body: dict[str, Any]) -> dict[str, Any]:
        obj = self._call(f'{plural}.{GROUP} "{name}"',
                         self.custom.patch_namespaced_custom_object,
                         GROUP, VERSION, namespace, plural, name, body,
                         _content_type="application/merge-patch+json")
        return dict(obj)

    def watch(self, plural: str, namespace: str, name: str, resource_version: str,
              timeout: float) -> Iterator[dict[str, Any]]:
        """Versions of one object after ``resource_version``, for up to ``timeout`` seconds.

        Ends quietly when the server closes the watch or the version is too old
        (HTTP 410); the caller reads the object again and resumes.
        """
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        w = watch.Watch()
        try:
            for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                  namespace, plural, field_selector=f"metadata.name={name}",
                                  resource_version=resource_version,
                                  timeout_seconds=max(1, int(timeout)),
                                  _request_timeout=timeout + 10):
                if event.get("type") == "ERROR":
                    return
                obj = event.get("object")
                if isinstance(obj, dict):
                    yield obj
        except ApiException as e:
            if e.status != 410:
                raise CliError(api_error(e, f'{plural}.{GROUP} "{name}"')) from None
        except (HTTPError, OSError):
            return
        finally:
            w.stop()


def api_error(e: Any, what: str) -> str:
    """kubectl's wording, e.g. ``Error from server (NotFound): schedules... "x" not found``."""
    import json

    reason, message = getattr(e, "reason", None) or "Error", None
    try:
        status = json.loads(e.body or "{}")
        reason = status.get("reason") or reason
        message = status.get("message")
    except (TypeError, ValueError):
        pass
    if getattr(e, "status", None) == 404 and not message:
        message = f"{what} not found"
    return f"Error from server ({reason}): {message or e}"

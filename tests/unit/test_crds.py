"""The committed CRDs (crds/ and the chart's copy) are exactly what the models generate."""

from __future__ import annotations

import subprocess
import sys

import yaml
from schedulezero_operator.api.crd import REPO, all_crds


def test_committed_crds_match_the_models() -> None:
    check = subprocess.run(
        [sys.executable, "-m", "schedulezero_operator.api.crd", "--check"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert check.returncode == 0, check.stderr


def test_schema_is_structural() -> None:
    """No $ref/anyOf/null types: the API server rejects them in CRD schemas."""
    text = yaml.safe_dump(all_crds())
    for forbidden in ("$ref", "anyOf", "type: 'null'", "$defs", "title:"):
        assert forbidden not in text


def test_schedule_crd_has_the_public_names() -> None:
    crd = all_crds()["schedules.yaml"]["spec"]
    assert crd["names"]["categories"] == ["schedulezero"]
    version = crd["versions"][0]
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["HANDLER", "METHOD", "SCHEDULE", "SUSPEND", "LAST RUN", "RESULT",
                       "NEXT RUN", "AGE"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["x-kubernetes-validations"][0]["message"].startswith("exactly one of")
    for field in ("handler", "method", "params", "schedule", "interval", "at", "timeZone",
                  "startTime", "endTime", "jitter", "suspend", "concurrencyPolicy",
                  "startingDeadlineSeconds", "catchUp", "retry", "timeoutSeconds", "priority",
                  "successfulRunsHistoryLimit", "failedRunsHistoryLimit", "pauseAfterFailures"):
        assert field in spec["properties"], field
        assert spec["properties"][field].get("description"), f"{field} needs a description"
    assert spec["properties"]["params"]["x-kubernetes-preserve-unknown-fields"] is True

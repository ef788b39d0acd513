"""Validates rendered Kubernetes manifests offline and prints them as one JSON array.

Built-in kinds are checked, strictly (no unknown fields), against the schemas of the
Kubernetes release below that kubernetes-validate carries; custom resources (KEDA,
Prometheus Operator) against the schemas in deploy/k8s/schemas/. Usage:
    kubectl kustomize deploy/k8s/overlays/production | python validate-manifests.py
Exit 1 with every problem named (kind/name: what) when one is invalid.
"""

import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "schemas"
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
}


def main() -> int:
    documents = [document for document in yaml.safe_load_all(sys.stdin) if document]
    problems = []
    for document in documents:
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        custom = CUSTOM.get((document.get("apiVersion"), document.get("kind")))
        try:
            if custom:
                schema = json.loads((SCHEMAS / custom).read_text())
                jsonschema.validate(document, schema)
            else:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except jsonschema.ValidationError as error:
            path = "/".join(str(part) for part in error.absolute_path)
            problems.append(f"{name}: {path}: {error.message}")
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            problems.append(f"{name}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{name}: no schema for it ({error})")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    json.dump(documents, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The deployment kit of the site: every Kubernetes manifest loads into the `kubernetes` client's
typed models with nothing lost (a misspelled or misplaced key would be dropped on the way and
show in the round trip; no API server exists here), the configurations the manifests carry are
valid for rigd and rigsite themselves, the pieces agree with each other (names, ports, etcd's
members, the SRV record), and the systemd unit is hardened."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from agent.config.settings import from_dict as rigd_config
from controller.config import from_dict as site_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MODELS = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Service"): "V1Service",
          ("apps/v1", "DaemonSet"): "V1DaemonSet", ("apps/v1", "Deployment"): "V1Deployment",
          ("apps/v1", "StatefulSet"): "V1StatefulSet",
          ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
          ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy"}


def load(name: str) -> list[tuple[dict[str, Any], Any]]:
    """Each document of a manifest with its typed model."""
    api = ApiClient()
    out = []
    for document in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()):
        model = MODELS[(document["apiVersion"], document["kind"])]
        out.append((document, api.deserialize(json.dumps(document), model,
                                              "application/json")))
    return out


def by_kind(name: str) -> dict[str, list[Any]]:
    kinds: dict[str, list[Any]] = {}
    for document, model in load(name):
        kinds.setdefault(document["kind"], []).append(model)
    return kinds


@pytest.mark.parametrize("name", sorted(p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")))
def test_every_manifest_loads_into_the_typed_models_with_nothing_lost(name: str) -> None:
    api = ApiClient()
    documents = load(name)
    assert documents
    for document, model in documents:
        assert model.metadata.namespace == "rigsite"
        assert api.sanitize_for_serialization(model) == document, \
            f"{document['kind']} {document['metadata']['name']}: a key the model does not know"


def test_the_rigd_daemonset_has_what_nvml_needs_and_a_valid_rigd_toml(tmp_path: Path) -> None:
    from agent.core import certs

    kinds = by_kind("rigd-daemonset.yaml")
    (daemonset,) = kinds["DaemonSet"]
    pod = daemonset.spec.template.spec
    (container,) = pod.containers
    assert pod.runtime_class_name == "nvidia"
    env = {e.name: e.value for e in container.env}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert {"compute", "utility"} <= set(env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert container.security_context.capabilities.add == ["SYS_ADMIN"]
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.termination_grace_period_seconds >= 38 + 10  # rigd's own stop bound, and more
    (config,) = kinds["ConfigMap"]
    text = config.data["rigd.toml"]
    certs.init(tmp_path, certs.server_names(["rigd"]), ["rigsite"], days=1, ca_days=1)
    text = text.replace("/etc/rigd/tls/", f"{tmp_path}/")
    rigd = rigd_config(tomllib.loads(text), source="rigd-config")  # what rigd itself checks
    assert rigd.certificate_roles == {"rigsite": "operator"}
    port = int(rigd.tcp_address.rpartition(":")[2])
    (service,) = kinds["Service"]
    assert service.spec.cluster_ip == "None"
    assert [(p.name, p.port) for p in service.spec.ports] == [("grpc", port)]
    assert container.ports[0].container_port == port


def test_the_controller_deployment_beside_etcd_agrees_with_it() -> None:
    site = by_kind("rigsite-deployment.yaml")
    etcd = by_kind("etcd-statefulset.yaml")
    (deployment,) = site["Deployment"]
    assert deployment.spec.replicas >= 2
    pod = deployment.spec.template.spec
    (container,) = pod.containers
    assert container.command[-2:] == ["--replica", "$(POD_NAME)"]
    assert {e.name: e.value_from.field_ref.field_path for e in container.env} == \
        {"POD_NAME": "metadata.name"}
    (config_map,) = site["ConfigMap"]
    config = site_config(tomllib.loads(config_map.data["site.toml"]), source="rigsite-config")
    (statefulset,) = etcd["StatefulSet"]
    assert statefulset.spec.replicas == 3
    members = [f"http://etcd-{i}.{statefulset.spec.service_name}.rigsite.svc.cluster.local:2379"
               for i in range(statefulset.spec.replicas)]
    assert list(config.etcd_endpoints) == members
    initial = next(a for a in statefulset.spec.template.spec.containers[0].command
                   if a.startswith("--initial-cluster="))
    assert initial.count("=http://") == 3
    rigd_service = by_kind("rigd-daemonset.yaml")["Service"][0]
    assert config.rig_srv == f"_{rigd_service.spec.ports[0].name}._tcp." \
        f"{rigd_service.metadata.name}.rigsite.svc.cluster.local."
    assert config.rig_server_name == "rigd"
    metrics = int(config.metrics_address.rpartition(":")[2])
    assert container.ports[0].container_port == metrics
    (budget,) = site["PodDisruptionBudget"]
    assert budget.spec.min_available == 1


def test_the_systemd_unit_is_hardened_and_hands_over_on_stop() -> None:
    unit = (DEPLOY / "rigsite.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, flags=re.M))
    assert settings["ExecStart"].endswith("rigsite run -c /etc/rigsite/site.toml")
    assert settings["User"] == "rigsite" and settings["CapabilityBoundingSet"] == ""
    assert settings["RestartPreventExitStatus"] == "2"  # a bad config stays failed
    assert settings["KillSignal"] == "SIGTERM"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "MemoryDenyWriteExecute"):
        assert settings[key] == "yes", key
    assert settings["ProtectSystem"] == "strict"


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_rates_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "rigsite.service"
    unit.write_text((DEPLOY / "rigsite.service").read_text())
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert exposure is not None, security.stdout + security.stderr
    assert float(exposure.group(1)) < 3.0, security.stdout

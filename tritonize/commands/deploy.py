"""`tritonize deploy kubernetes`: manifests from a `tritonize plan` results file."""

from __future__ import annotations

from pathlib import Path

import typer

from tritonize.commands.conversion import fail
from tritonize.console import console
from tritonize.options import Repository

deploy_app = typer.Typer(no_args_is_help=True, help="Deployment manifests sized by a capacity plan.")
KINDS = ("deployment", "kserve")


@deploy_app.command("kubernetes")
def kubernetes(
    plan: Path = typer.Option(..., "--plan", help="results.json written by `tritonize plan`."),
    image: str = typer.Option(..., "--image", help="The image built from this repository's Dockerfile."),
    out: Path = typer.Option(Path("deploy/kubernetes"), "--out", help="Folder for the manifests."),
    kind: str = typer.Option("deployment", "--kind", help="deployment (Deployment, Service, HPA, PDB, ServiceMonitor) or kserve."),
    repository: Path = Repository,
    name: str = typer.Option(None, help="Resource name (default: from the pipeline)."),
    namespace: str = typer.Option(None, help="Namespace (default: kubectl's)."),
    gpus: int = typer.Option(None, help="GPUs per pod (default: 1 for a plan measured on a GPU, else none)."),
    cpu: str = typer.Option(None, help="CPU per pod, a Kubernetes quantity (default: the cores of the plan's replica)."),
    memory: str = typer.Option(None, help="Memory per pod, e.g. 2Gi (default: the replica's measured memory plus 50%)."),
    max_replicas: int = typer.Option(None, help="Autoscaler ceiling (default: twice the plan's replicas)."),
    exit_timeout: int = typer.Option(30, help="Seconds in-flight requests may run on after SIGTERM."),
    startup_timeout: int = typer.Option(600, help="Seconds a pod may take to build engines and load models."),
) -> None:
    """Kubernetes manifests with the plan's replicas and model-step settings, an autoscaler on a per-pod
    Triton metric, and probes and a grace period that cover the server's drain."""
    from tritonize.deploy.kserve import kserve_manifests
    from tritonize.deploy.kubernetes import Settings, default_name, manifests, notes, write
    from tritonize.deploy.plan import DeployError, load_plan

    if kind not in KINDS:
        raise typer.BadParameter(f"--kind must be one of {KINDS}, not {kind!r}")
    try:  # everything is generated before anything is written
        p = load_plan(plan)
        settings = Settings(image, name or default_name(p.pipeline), namespace, gpus, cpu, memory, max_replicas=max_replicas,
                            exit_timeout_s=exit_timeout, startup_s=startup_timeout)
        documents = (manifests if kind == "deployment" else kserve_manifests)(p, settings, repository)
        said = notes(p, settings, repository)
    except DeployError as e:
        raise fail(str(e)) from None
    for path in write(documents, out):
        console.print(f"wrote {path}")
    console.print(f"{p.replicas} replica(s) of {p.system}: {p.capacity_rps:.1f} req/s each at p{p.percentile} <= {p.slo_ms:g} ms; "
                  f"autoscaling above {p.per_pod_rps:.1f} req/s per pod ({p.headroom:.0%} headroom)")
    for line in said:
        console.print(line, soft_wrap=True)
    console.print(f"the image must hold {p.pipeline}: build it from --repository {repository} (the default CONVERT=demo holds "
                  f"the demo models only)", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")

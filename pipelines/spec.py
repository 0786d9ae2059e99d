"""Processing steps as data: what a job needs, declared next to the job's code.

Each processing step's module declares one ``ProcessingSpec`` (``SPEC``): the command
our image runs, its arguments, the inputs it reads (another step's output, the trained
model), the outputs it writes, the property files later steps read, and how it runs
(cached, retried, offline, how many instances, which configuration sections its
``Environment`` carries). ``pipelines.builder`` turns specs and a configuration into
the SDK's steps; nothing here imports the SDK.

Values that are known only when the pipeline is built or run are references:

- ``Parameter("AsOfDate")``: a pipeline parameter (``text=True`` for its string form,
  as a command-line argument needs for a number);
- ``Setting("features.feature_set")``: a configuration value, as text;
- ``StepOutput("Extract", "train")``: the S3 prefix of another step's named output;
- ``ReportValue("Gate", "GateReport", "tracking.run_id")``: a value in another step's
  property file;
- ``StepProperty("Register", "ModelPackageArn")``: a property of another step;
- ``EXECUTION_ID``, ``MODEL`` (the training step's model artifact) and
  ``EVERY_PARAMETER`` (``--param NAME=VALUE`` for each pipeline parameter).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Parameter:
    """A pipeline parameter's value at run time."""

    name: str
    text: bool = False


@dataclass(frozen=True)
class Setting:
    """A value of the configuration (``section.key``), as text."""

    path: str


@dataclass(frozen=True)
class StepOutput:
    """The S3 prefix where another step's output ``output`` was uploaded."""

    step: str
    output: str


@dataclass(frozen=True)
class ReportValue:
    """The value at ``path`` in another step's property file."""

    step: str
    property_file: str
    path: str


@dataclass(frozen=True)
class StepProperty:
    """A property of another step, as SageMaker describes it (``ModelPackageArn``)."""

    step: str
    name: str


@dataclass(frozen=True)
class _Marker:
    name: str


EXECUTION_ID = _Marker("execution id")
# The trained model's archive (model.tar.gz): Train's, or the best of Tune's jobs
MODEL = _Marker("trained model")
# "--param NAME=VALUE" for every parameter of the pipeline (Preflight checks them all)
EVERY_PARAMETER = _Marker("every parameter")

Reference = Parameter | Setting | StepOutput | ReportValue | StepProperty | _Marker
Argument = str | Reference


@dataclass(frozen=True)
class Input:
    """A channel the job reads at ``local_path`` (downloaded before it starts)."""

    name: str
    source: Reference
    local_path: str


@dataclass(frozen=True)
class Output:
    """What the job leaves at ``local_path``, uploaded when it ends under this
    execution's ``folder`` (by default the output's name)."""

    name: str
    local_path: str
    folder: tuple[str, ...] = ()


@dataclass(frozen=True)
class PropertyFile:
    """A JSON file among an output's files whose values later steps read."""

    name: str
    output: str
    path: str


@dataclass(frozen=True)
class ProcessingSpec:
    """One processing job of a pipeline.

    ``sections``: the configuration sections the job reads; its ``Environment`` carries
    them (a job on SageMaker sees only its request). ``tracking``: it logs to MLflow,
    so it gets the tracking server when one is configured. ``cached``: SageMaker may
    reuse an earlier execution's outputs for the same arguments (only for jobs whose
    result depends on nothing else). ``offline``: it needs no network, so it runs
    isolated when ``security.network_isolation`` is set. ``retried``: throttling,
    service faults and capacity errors are retried.
    """

    name: str
    command: tuple[str, ...]
    arguments: tuple[Argument, ...] = ()
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    property_files: tuple[PropertyFile, ...] = ()
    sections: tuple[str, ...] = ()
    tracking: bool = False
    cached: bool = False
    offline: bool = False
    retried: bool = True
    instance_count: int | Parameter = 1
    references: tuple[Reference, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        found = [a for a in self.arguments if not isinstance(a, str)]
        found += [i.source for i in self.inputs]
        if isinstance(self.instance_count, Parameter):
            found.append(self.instance_count)
        object.__setattr__(self, "references", tuple(found))
        outputs = {o.name for o in self.outputs}
        for report in self.property_files:
            if report.output not in outputs:
                raise ValueError(
                    f"{self.name}: property file {report.name} is in output "
                    f"{report.output!r}, which the step does not declare"
                )

    def needs(self) -> set[str]:
        """The steps whose outputs or properties this step reads."""
        return {
            r.step
            for r in self.references
            if isinstance(r, (StepOutput, ReportValue, StepProperty))
        }


def python_module(module: str, *arguments: str) -> tuple[str, ...]:
    """The command that runs ``module`` with our image's Python."""
    return ("python", "-m", module, *arguments)

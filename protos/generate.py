"""Generates the 13 ``versatil/ml/v1/<resource>_service.proto`` files from one template.

Every resource service has the same shape: Create, Get, List, Update, Delete, BatchCreate,
BatchGet and Get<R>Stats, with their messages and comments, written once in
``templates/resource_service.proto.j2``. What differs between resources comes from:

* ``models.py``, for what the schema says: the parents and what deleting a row cascades to,
  the unique indexes (ALREADY_EXISTS), numbered versions, the relation fields, and whether
  there is a ``status``, ``created_by`` or ``embedding`` field;
* ``RESOURCES`` below, for what it cannot say: the examples in the comments, the child lists
  the message holds, and the custom RPCs, each a fragment in ``templates/custom/`` (Search<R>s
  is one fragment for every resource that has it).

The generated files are checked in: they are the contract clients read and the stubs are built
from, and ``tests/test_protos.py`` fails when one differs from what this script writes.

    python protos/generate.py          # write the files (make service-protos)
    python protos/generate.py --check  # exit 1 and print a diff when a file is stale

To add a resource: its message in ``versatil/ml/v1/resources.proto``, its model in ``models.py``
(with a migration), a row in ``RESOURCES``, then run this script and ``make proto``.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import jinja2
from peewee import ForeignKeyField

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # models.py, when run as a script

import models  # noqa: E402

OUT = ROOT / "versatil" / "ml" / "v1"
WIDTH = 100  # comment lines wrap at this column


@dataclass(frozen=True)
class Resource:
    """What a service's comments say that ``models.py`` cannot."""

    model: type[models.BaseModel]
    # A field the read_mask examples name besides `id`.
    mask_example: str
    # List's example filter (AIP-160).
    filter_example: str
    # Relation paths the expand examples name; none when the resource has no relations.
    expand_examples: tuple[str, ...] = ()
    # A parent's field that Get<R>Stats may group by, when the resource has a parent.
    stats_example: str = ""
    order_by_example: str = "created_at desc, name"
    # Child lists a Create may carry inline, and the other child lists the message holds.
    inline: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    # Fragments of templates/custom/ that add RPCs, and Search<R>s's example filter.
    custom: tuple[str, ...] = ()
    search_filter: str = ""
    # A sentence BatchCreate's comment adds.
    batch_create_note: str = ""
    # The name in prose, when it is not the message name's words in lower case.
    display: str = ""
    # Whether the service refuses some status moves (a lifecycle), so Update may be
    # FAILED_PRECONDITION for one; resources whose status moves freely say nothing of it.
    restricted_status: bool = False


# Message name -> declaration.
RESOURCES: dict[str, Resource] = {
    "Workflow": Resource(
        models.Workflow,
        mask_example="name",
        filter_example='status IN (ACTIVE, PAUSED) AND (name = "fraud*" OR models.framework = PYTORCH)',
        expand_examples=("datasets", "models.versions"),
        children=("datasets", "models", "experiments"),
        custom=("search",),
        search_filter='status = ACTIVE AND created_by = "alice"',
    ),
    "Dataset": Resource(
        models.Dataset,
        mask_example="name",
        filter_example='type IN (IMAGE, VIDEO) AND metadata.source = "cam*" AND workflow.status = ACTIVE',
        expand_examples=("workflow", "versions", "training_jobs.experiment"),
        stats_example="workflow.status",
        inline=("versions",),
        children=("training_jobs",),
        custom=("search",),
        search_filter='workflow_id = "0190..." AND type = IMAGE',
    ),
    "DatasetVersion": Resource(
        models.DatasetVersion,
        mask_example="version",
        filter_example='version >= 2 AND checksum != "" AND dataset.type = TABULAR',
        expand_examples=("dataset", "dataset.workflow"),
        stats_example="dataset.type",
        order_by_example="version desc",
    ),
    "Model": Resource(
        models.MLModel,
        mask_example="name",
        filter_example="framework = PYTORCH AND NOT (type = GENERATIVE) AND versions.status = DEPLOYED",
        expand_examples=("workflow", "versions.deployments"),
        stats_example="workflow.status",
        inline=("versions",),
        children=("endpoints",),
        custom=("search",),
        search_filter="framework = PYTORCH AND type = NLP",
    ),
    "ModelVersion": Resource(
        models.ModelVersion,
        mask_example="version",
        filter_example="status IN (TRAINED, VALIDATED) AND metrics.accuracy >= 0.9 AND model.framework = PYTORCH",
        expand_examples=("model", "training_job", "deployments.endpoint"),
        stats_example="model.framework",
        order_by_example="version desc",
        children=("deployments",),
        restricted_status=True,
    ),
    "Experiment": Resource(
        models.Experiment,
        mask_example="name",
        filter_example='status = RUNNING AND hyperparameters.optimizer = "adam" AND training_jobs.status = FAILED',
        expand_examples=("workflow", "training_jobs.dataset"),
        stats_example="workflow.status",
        children=("training_jobs",),
    ),
    "TrainingJob": Resource(
        models.TrainingJob,
        mask_example="status",
        filter_example='status = FAILED AND end_time >= "2026-01-01T00:00:00Z" AND experiment.name = "lr-sweep*"',
        expand_examples=("experiment.workflow", "dataset"),
        stats_example="experiment.status",
        order_by_example="created_at desc, status",
        custom=("cancel",),
        restricted_status=True,
    ),
    "Endpoint": Resource(
        models.Endpoint,
        mask_example="url",
        filter_example="status = READY AND model.framework = PYTORCH AND deployments.status = DEPLOYED",
        expand_examples=("model", "deployments.model_version"),
        stats_example="model.framework",
        inline=("deployments",),
        custom=("deploy",),
    ),
    "Deployment": Resource(
        models.Deployment,
        mask_example="traffic_split",
        filter_example="status = DEPLOYED AND traffic_split >= 50 AND model_version.status != DEPRECATED",
        expand_examples=("endpoint", "model_version.model"),
        stats_example="endpoint.status",
        order_by_example="traffic_split desc, created_at",
        restricted_status=True,
    ),
    "Prediction": Resource(
        models.Prediction,
        mask_example="output",
        filter_example='endpoint.name = "prod" AND (latency > 500 OR confidence < 0.5) AND completed_at != null',
        expand_examples=("endpoint", "model_version.model"),
        stats_example="endpoint.name",
        order_by_example="created_at desc, latency",
        batch_create_note="This is the ingestion path for predictions.",
        custom=("search",),
        search_filter='endpoint_id = "0190..." AND status = COMPLETED',
    ),
    "PatternRecognitionJob": Resource(
        models.PatternRecognitionJob,
        mask_example="results",
        filter_example="pattern_type IN (ANOMALY, TREND) AND patterns_found > 0 AND end_time = null",
        custom=("search",),
        search_filter="pattern_type = ANOMALY AND status = SUCCEEDED",
        restricted_status=True,
    ),
    "CloudRunService": Resource(
        models.CloudRunService,
        display="Cloud Run service",
        mask_example="url",
        filter_example='region = "europe-*" AND status = READY AND deployments.status = FAILED',
        expand_examples=("deployments",),
        children=("deployments",),
        custom=("rollback",),
    ),
    "ServiceDeployment": Resource(
        models.ServiceDeployment,
        mask_example="revision",
        filter_example='status = ACTIVE AND config.concurrency > 80 AND cloud_run_service.region = "europe-west1"',
        expand_examples=("cloud_run_service",),
        stats_example="cloud_run_service.region",
        order_by_example="created_at desc, revision",
        restricted_status=True,
    ),
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def words(field: str) -> str:
    return field.removesuffix("_id").replace("_", " ")


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def listing(items: list[str], last: str = "and") -> str:
    """``a, b and c``."""
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def numbering(key: str) -> str:
    """A unique field in prose: ``version`` is a version number."""
    return "version number" if key == "version" else words(key)


def require(condition: object, problem: str) -> None:
    if not condition:
        raise ValueError(f"protos/generate.py: {problem}")


def name_of(model: type[models.BaseModel]) -> str:
    return next(name for name, resource in RESOURCES.items() if resource.model is model)


def display_of(model: type[models.BaseModel]) -> str:
    name = name_of(model)
    return RESOURCES[name].display or snake(name).replace("_", " ")


def foreign_keys(model: type[models.BaseModel]) -> list[ForeignKeyField]:
    return [f for f in model._meta.sorted_fields if isinstance(f, ForeignKeyField)]


def backrefs(model: type[models.BaseModel], on_delete: str) -> list[ForeignKeyField]:
    """The foreign keys of other resources that point at ``model`` with this ON DELETE."""
    return [fk for fk in model._meta.backrefs if fk.model in models.RESOURCE_MODELS and fk.on_delete == on_delete]


def unique_keys(model: type[models.BaseModel]) -> list[tuple[str, ...]]:
    return [fields for fields, unique in (i for i in model._meta.indexes if isinstance(i, tuple)) if unique]


def descendants(model: type[models.BaseModel]) -> list[type[models.BaseModel]]:
    """What deleting a ``model`` row deletes too, nearest first."""
    found: list[type[models.BaseModel]] = []
    for parent in [model, *found]:  # breadth first: the loop visits what it appends
        found += [fk.model for fk in backrefs(parent, "CASCADE") if fk.model not in found]
    return found


def plural_display(model: type[models.BaseModel]) -> str:
    return display_of(model) + "s"


@dataclass(frozen=True)
class Service:
    """What the template says about one resource, derived from models.py and its declaration."""

    name: str  # the message: DatasetVersion
    decl: Resource
    field: str  # its field in requests: dataset_version (and dataset_versions in lists)
    plural: str  # in RPC names: DatasetVersions
    display: str  # in prose: dataset version
    displays: str  # dataset versions
    a: str  # a dataset version

    @classmethod
    def of(cls, name: str, decl: Resource) -> Service:
        display = display_of(decl.model)
        return cls(name, decl, snake(name), name + "s", display, display + "s", article(display))

    @property
    def model(self) -> type[models.BaseModel]:
        return self.decl.model

    def missing_parents(self) -> str:
        """When Create is FAILED_PRECONDITION: ``workflow_id names no workflow``."""
        def names_no(fk: ForeignKeyField, owner: str = "") -> str:
            return f"{owner}{fk.column_name}{' is set and' * fk.null} names no {display_of(fk.rel_model)}"

        required = [names_no(fk) for fk in foreign_keys(self.model) if not fk.null]
        optional = [names_no(fk) for fk in foreign_keys(self.model) if fk.null]
        for relation in self.decl.inline:
            child = getattr(self.model, relation).field
            owner = f"{article('inline ' + display_of(child.model))}'s "
            optional += [names_no(fk, owner) for fk in foreign_keys(child.model) if fk is not child]
        return ", or ".join(filter(None, [" or ".join(required), *optional]))

    def conflicts(self) -> str:
        """When a write is ALREADY_EXISTS, from the unique indexes."""
        found = []
        for *scope, key in unique_keys(self.model):
            parent = self.model._meta.fields[scope[0]] if len(scope) == 1 else None
            if not isinstance(parent, ForeignKeyField):  # unique in a scope of plain fields
                where = listing([words(field) for field in scope])
                found.append(f"{self.a} with this {words(key)} already exists in the {where}")
            elif key == "name":
                found.append(f"the {display_of(parent.rel_model)} already has {self.a} with this name")
            else:
                found.append(f"the {display_of(parent.rel_model)} already has this {numbering(key)}")
        return ", or ".join(found)

    def inline_conflicts(self) -> str:
        """When inline children collide with each other under the new resource."""
        found = []
        for relation in self.decl.inline:
            child = getattr(self.model, relation).field
            for *scope, key in unique_keys(child.model):
                if scope == [child.name]:
                    found.append(f"two inline {words(relation)} share a {numbering(key)}")
        return ", or ".join(found)

    @property
    def relations(self) -> list[str]:
        """The relation fields of the message, in its order: inline children, parents, other children."""
        unknown = set(self.decl.inline + self.decl.children) - {fk.backref for fk in self.model._meta.backrefs}
        require(not unknown, f"{self.name} has no child relation {unknown} in models.py")
        return [*self.decl.inline, *(fk.name for fk in foreign_keys(self.model)), *self.decl.children]

    @property
    def output_relations(self) -> list[str]:
        return [name for name in self.relations if name not in self.decl.inline]

    @property
    def immutable(self) -> list[str]:
        """Fields an update may not name, as server.core.resource derives them."""
        fields = ["id", *(fk.column_name for fk in foreign_keys(self.model) if fk.on_delete == "CASCADE")]
        if any(key[-1] == "version" for key in unique_keys(self.model)):
            fields.append("version")
        if "created_by" in self.model._meta.fields:
            fields.append("created_by")
        return [*fields, "created_at", "updated_at", "etag"]

    def update_preconditions(self) -> str:
        """When Update is FAILED_PRECONDITION: a parent it may change names no row, a status move."""
        found = [f"{fk.column_name} names no {display_of(fk.rel_model)}"
                 for fk in foreign_keys(self.model) if fk.on_delete != "CASCADE"]
        if self.decl.restricted_status:
            found.append("the status change is not allowed")
        return ", or ".join(found)

    def cascade(self) -> str:
        """What Delete does beyond the row itself, to follow "(AIP-135)"."""
        def with_theirs(child: type[models.BaseModel]) -> str:
            below = [plural_display(m) for m in descendants(child)]
            return plural_display(child) + (f" (with their {listing(below)})" if below else "")

        children = [with_theirs(fk.model) for fk in backrefs(self.model, "CASCADE")]
        said = f" and, in the same transaction, what cascades from it: its {listing(children)}" if children else ""
        for deleted in (self.model, *descendants(self.model)):  # rows that only lose a reference
            for fk in backrefs(deleted, "SET NULL"):
                rows, key = plural_display(fk.model), fk.column_name
                if deleted is self.model:
                    said += f"; the {rows} that name it are kept, with their {key} cleared"
                else:
                    said += f"; {rows} of a deleted {display_of(deleted)} lose their {key}"
        return said or "; it has no children, so nothing else is deleted"

    def check(self) -> None:
        """Fails when a declaration names what models.py does not have."""
        def walk(model: type[models.BaseModel], path: str) -> None:
            for step in path.split("."):
                children = {fk.backref: fk.model for fk in model._meta.backrefs}
                field = model._meta.fields.get(step)
                require(field or step in children, f"{self.name}: {path!r} names no field {step!r} in models.py")
                model = field.rel_model if isinstance(field, ForeignKeyField) else children.get(step, model)

        for path in (self.decl.mask_example, self.decl.stats_example, *self.decl.expand_examples):
            if path:
                walk(self.model, path)
        has_parents = bool(foreign_keys(self.model))
        require(bool(self.decl.expand_examples) == bool(self.relations), f"{self.name}: expand examples iff relations")
        require(bool(self.decl.stats_example) == has_parents, f"{self.name}: a stats example iff parents")
        if "search" in self.decl.custom:
            require("embedding" in self.model._meta.fields, f"{self.name}: search needs an embedding in models.py")
            require(self.decl.search_filter, f"{self.name}: search needs a search_filter")


def comment(text: str, indent: int) -> str:
    """Wraps ``text`` into ``//`` lines; a blank line separates paragraphs, `code spans` stay whole."""
    prefix = " " * indent + "//"
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if lines:
            lines.append(prefix)
        joined = re.sub(r"`[^`]*`", lambda span: span[0].replace(" ", "\0"), " ".join(paragraph.split()))
        wrapped = textwrap.wrap(joined, WIDTH - len(prefix) - 1, break_long_words=False, break_on_hyphens=False)
        lines += [f"{prefix} {line}".replace("\0", " ") for line in wrapped]
    return "\n".join(lines) + "\n"


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(ROOT / "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
ENVIRONMENT.filters.update(
    comment=comment,
    listing=listing,
    code=lambda items: [f"`{item}`" for item in items],
    first_upper=lambda text: text[:1].upper() + text[1:],
)
ENVIRONMENT.globals.update(
    ABORTED="ABORTED if the transaction hit a serialization conflict (retry)",
    UNAVAILABLE="UNAVAILABLE if the database is unreachable (retry later)",
    EMBEDDING_DIMENSIONS=models.EMBEDDING_DIMENSIONS,
)


def render() -> dict[Path, str]:
    """Every service proto, by path, as the template writes it."""
    template = ENVIRONMENT.get_template("resource_service.proto.j2")
    files = {}
    for name, declaration in RESOURCES.items():
        service = Service.of(name, declaration)
        service.check()
        fragments = [ENVIRONMENT.get_template(f"custom/{custom}.proto.j2").module for custom in declaration.custom]
        files[OUT / f"{service.field}_service.proto"] = template.render(r=service, fragments=fragments)
    return files


def stale() -> list[str]:
    """A unified diff for each service proto that differs from the generator's output."""
    diffs = []
    for path, text in render().items():
        current = path.read_text() if path.exists() else ""
        if current != text:
            name = os.path.relpath(path, ROOT.parent)
            diffs.append("".join(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{name} (checked in)", f"{name} (generated)",
            )))
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff if a file is stale")
    if parser.parse_args().check:
        diffs = stale()
        sys.stdout.write("".join(diffs))
        return 1 if diffs else 0
    for path, text in render().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

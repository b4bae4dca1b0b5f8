"""``ckan harvester job approve-removals JOB``: approve a job's held removals.

A job whose circuit breaker tripped (it would have withdrawn more than
``delete_missing.max_fraction`` of its source's datasets, or its source listed
none) withdrew nothing; this command performs those withdrawals, once.

The command object is meant to hang under the ``job`` group
(``job_command.add_command(approve_removals_command)``).
"""
from __future__ import annotations

import click
from ckan.plugins import toolkit

from ckanext.harvest.cli.base import abort, action, guarded


def approve_removals(job_id: str) -> str:
    """Queue the held withdrawals of a job.

    :returns: the line the command prints
    :raises ObjectNotFound: no such job
    """
    result = action("harvest_job_approve_removals", {"id": job_id})
    if not result["approved"]:
        return "Job {}: no held removal to approve.".format(result["job_id"])
    return ("Job {}: {} removal(s) approved and queued; the fetch consumer "
            "performs them.".format(result["job_id"], result["approved"]))


@click.command(name="approve-removals",
               short_help="Withdraw the datasets a job's circuit breaker held back.")
@click.argument("job_id", metavar="JOB")
@guarded()
def approve_removals_command(job_id: str) -> None:
    """Withdraw the datasets whose removal the circuit breaker of job JOB held
    back (the job's source no longer lists them; the job would have withdrawn
    more than delete_missing.max_fraction of the source's datasets, or the
    source listed none). The withdrawals are queued for the fetch consumer.
    Approving again does nothing.
    """
    try:
        message = approve_removals(job_id)
    except toolkit.ObjectNotFound:
        abort("Job not found.")
    click.echo(message)

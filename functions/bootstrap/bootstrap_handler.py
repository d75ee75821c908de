"""Deploy-time custom resource: create the search index (idempotent) and, on a fresh stage, the
first account and admin key, whose secret goes to Secrets Manager and nowhere else."""

import boto3
from aws_lambda_powertools import Logger
from tenacity import Retrying, stop_after_delay, wait_exponential

from threadgate.bootstrap import ensure_first_admin
from threadgate.runtime import get_runtime
from threadgate.search.opensearch import bootstrap_index

logger = Logger()
# A new collection's data access policy can take a minute or two to admit this role.
index_retries = Retrying(stop=stop_after_delay(240), wait=wait_exponential(min=2, max=30), reraise=True)


@logger.inject_lambda_context
def handler(event, context):
    if event["RequestType"] != "Delete":  # what happens to data on delete is the tables' policy
        runtime = get_runtime()
        index_retries(bootstrap_index, runtime.settings)
        secret = ensure_first_admin(runtime.stores, runtime.clock, runtime.settings)
        if secret:
            boto3.client("secretsmanager").put_secret_value(
                SecretId=runtime.settings.admin_secret_name, SecretString=secret
            )
            logger.info("first admin key created and stored in Secrets Manager")
    return {"PhysicalResourceId": "threadgate-bootstrap"}

"""DynamoDB tables (built from `schema.TABLES`, the adapter's own description), the KMS key for
webhook secrets and the Secrets Manager entries the functions read."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StageConfig
from threadgate.stores.dynamodb.schema import TABLES, TableSpec

PROVIDERS = ("anthropic", "openai")
# What the adapters call (threadgate/stores/dynamodb); transactions need the per-item actions.
READ_ACTIONS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"]
WRITE_ACTIONS = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]
_ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}


class Data(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.DESTROY if config.is_dev else RemovalPolicy.RETAIN
        self.tables: dict[str, dynamodb.Table] = {
            logical: _table(self, spec, config, removal) for logical, spec in TABLES.items()
        }
        self.webhook_key = kms.Key(
            self, "WebhookSecretsKey",
            description=f"{config.prefix}: encrypts tool webhook signing secrets at rest",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        self.provider_secrets_prefix = f"{config.prefix}/providers/"
        self.provider_secrets = {
            name: _empty_secret(
                self, f"{name.title()}ApiKey", f"{self.provider_secrets_prefix}{name}",
                f"{name} API key for Threadgate {config.stage}: set it with put-secret-value",
            )
            for name in PROVIDERS
        }
        # Written once by the deploy-time bootstrap; the key never appears in outputs or logs.
        self.admin_secret = _empty_secret(
            self, "AdminKey", f"{config.prefix}/admin-key",
            f"First admin key of Threadgate {config.stage}, created at deploy time",
        )

    def grant_table(self, role: iam.IRole, logical: str, *, write: bool) -> None:
        """Item-level actions on one table and its named indexes (no wildcards)."""
        table = self.tables[logical]
        resources = [table.table_arn] + [f"{table.table_arn}/index/{gsi.name}" for gsi in TABLES[logical].gsis]
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=READ_ACTIONS + (WRITE_ACTIONS if write else []), resources=resources
        ))

    def grant_webhook_secrets(self, role: iam.IRole) -> None:
        """Seal and open tool webhook secrets (direct KMS Encrypt/Decrypt; they are < 4 KB)."""
        self.webhook_key.grant(role, "kms:Encrypt", "kms:Decrypt")

    def environment(self) -> dict[str, str]:
        """Settings the functions need to find these resources (names only, never values)."""
        env = {
            f"THREADGATE_{TABLES[logical].settings_field.upper()}": table.table_name
            for logical, table in self.tables.items()
        }
        env["THREADGATE_PROVIDER_SECRETS_PREFIX"] = self.provider_secrets_prefix
        env["THREADGATE_WEBHOOK_KMS_KEY_ID"] = self.webhook_key.key_arn
        return env


def _table(scope: Construct, spec: TableSpec, config: StageConfig, removal: RemovalPolicy) -> dynamodb.Table:
    table = dynamodb.Table(
        scope, _construct_id(spec.logical),
        partition_key=dynamodb.Attribute(name=spec.pk, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=spec.sk, type=_ATTRIBUTE_TYPES[spec.sk_type]) if spec.sk else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        deletion_protection=not config.is_dev,
        time_to_live_attribute=spec.ttl_attribute,
        stream=dynamodb.StreamViewType.NEW_IMAGE if spec.stream else None,
        removal_policy=removal,
    )
    for index in spec.gsis:
        table.add_global_secondary_index(
            index_name=index.name,
            partition_key=dynamodb.Attribute(name=index.pk, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=index.sk, type=_ATTRIBUTE_TYPES[index.sk_type]) if index.sk else None,
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table


def _empty_secret(scope: Construct, construct_id: str, name: str, description: str) -> secretsmanager.Secret:
    secret = secretsmanager.Secret(scope, construct_id, secret_name=name, description=description)
    # Without a value (rather than CDK's generated password) a missing key reads as "not set".
    secret.node.default_child.add_property_deletion_override("GenerateSecretString")
    return secret


def _construct_id(logical: str) -> str:
    return "".join(part.title() for part in logical.split("_")) + "Table"

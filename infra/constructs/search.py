"""Semantic search storage: an OpenSearch Serverless vector collection (default) or a managed
OpenSearch domain, plus the Bedrock embedding model the functions may call."""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchserverless as aoss
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from infra.config import StageConfig

INDEX_NAME = "threadgate-messages"
# What each kind of caller may do in the serverless collection's data plane.
_DOCUMENT_PERMISSIONS = ["aoss:DescribeIndex", "aoss:ReadDocument", "aoss:WriteDocument"]
_INDEX_ADMIN_PERMISSIONS = ["aoss:CreateIndex", "aoss:UpdateIndex", *_DOCUMENT_PERMISSIONS]

class Search(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._readers_writers: list[iam.IRole] = []
        self._index_admins: list[iam.IRole] = []
        stack = Stack.of(self)
        self.embedding_model_arn = stack.format_arn(
            service="bedrock", account="", resource="foundation-model", resource_name=config.embedding_model_id
        )
        if config.opensearch == "serverless":
            self._collection_name = f"tg-{config.stage}"[:32].lower()
            self._collection = self._serverless(config)
            self.endpoint = self._collection.attr_collection_endpoint
            self.service = "aoss"
        else:
            self._domain = self._managed_domain(config)
            self.endpoint = f"https://{self._domain.domain_endpoint}"
            self.service = "es"

    def environment(self) -> dict[str, str]:
        return {
            "THREADGATE_OPENSEARCH_ENDPOINT": self.endpoint,
            "THREADGATE_OPENSEARCH_SERVICE": self.service,
            "THREADGATE_OPENSEARCH_INDEX": INDEX_NAME,
            "THREADGATE_EMBEDDING_MODEL_ID": self._config.embedding_model_id,
            "THREADGATE_EMBEDDING_DIMENSIONS": str(self._config.embedding_dimensions),
        }

    def grant_documents(self, role: iam.IRole) -> None:
        """Read, write and delete message documents; embed queries and messages."""
        self._grant(role, admin=False)

    def grant_index_admin(self, role: iam.IRole) -> None:
        """Everything `grant_documents` allows, plus creating the index (deploy-time bootstrap)."""
        self._grant(role, admin=True)

    def _grant(self, role: iam.IRole, *, admin: bool) -> None:
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["bedrock:InvokeModel"], resources=[self.embedding_model_arn]
        ))
        if self._config.opensearch == "serverless":
            (self._index_admins if admin else self._readers_writers).append(role)
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["aoss:APIAccessAll"], resources=[self._collection.attr_arn]
            ))
        else:
            self._domain.grant_index_read_write(INDEX_NAME, role)  # also covers creating it

    def finalize(self) -> None:
        """Write the collection's data access policy once every role has been granted."""
        if self._config.opensearch != "serverless":
            return
        name = self._collection_name
        rules = []
        for roles, permissions in ((self._readers_writers, _DOCUMENT_PERMISSIONS),
                                   (self._index_admins, _INDEX_ADMIN_PERMISSIONS)):
            if roles:
                rules.append({
                    "Rules": [{"ResourceType": "index", "Resource": [f"index/{name}/*"],
                               "Permission": permissions}],
                    "Principal": [role.role_arn for role in roles],
                })
        policy = aoss.CfnAccessPolicy(
            self, "DataAccess", name=f"{name}-data", type="data", policy=Stack.of(self).to_json_string(rules)
        )
        self._collection.node.add_dependency(policy)

    def _serverless(self, config: StageConfig) -> aoss.CfnCollection:
        name = self._collection_name
        collection_rule = [{"ResourceType": "collection", "Resource": [f"collection/{name}"]}]
        encryption = aoss.CfnSecurityPolicy(
            self, "Encryption", name=f"{name}-enc", type="encryption",
            policy=json.dumps({"Rules": collection_rule, "AWSOwnedKey": True}),
        )
        # Lambda functions run outside a VPC; every data-plane call is SigV4-signed and checked
        # against the IAM policy and the data access policy.
        network = aoss.CfnSecurityPolicy(
            self, "Network", name=f"{name}-net", type="network",
            policy=json.dumps([{"Rules": collection_rule, "AllowFromPublic": True}]),
        )
        collection = aoss.CfnCollection(
            self, "Collection", name=name, type="VECTORSEARCH",
            description=f"Threadgate {config.stage} message embeddings",
            standby_replicas="DISABLED" if config.is_dev else "ENABLED",
        )
        collection.node.add_dependency(encryption, network)
        return collection

    def _managed_domain(self, config: StageConfig) -> opensearch.Domain:
        removal = RemovalPolicy.DESTROY if config.is_dev else RemovalPolicy.RETAIN
        slow_logs = logs.LogGroup(self, "SlowLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal)
        app_logs = logs.LogGroup(self, "AppLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=removal)
        nodes = 1 if config.is_dev else 2
        name = f"tg-{config.stage}"[:28].lower()
        # Only signed requests from this account's IAM principals; their own policies narrow it.
        account_only = iam.PolicyStatement(
            principals=[iam.AccountRootPrincipal()],
            actions=["es:ESHttp*"],
            resources=[Stack.of(self).format_arn(service="es", resource="domain", resource_name=f"{name}/*")],
        )
        return opensearch.Domain(
            self, "Domain",
            domain_name=name,
            access_policies=[account_only],
            version=opensearch.EngineVersion.OPENSEARCH_2_19,
            capacity=opensearch.CapacityConfig(
                data_nodes=nodes,
                data_node_instance_type="t3.small.search" if config.is_dev else "r7g.large.search",
                multi_az_with_standby_enabled=False,
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=nodes > 1, availability_zone_count=2)
            if nodes > 1 else None,
            ebs=opensearch.EbsOptions(volume_size=10 if config.is_dev else 50),
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True),
            node_to_node_encryption=True,
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            logging=opensearch.LoggingOptions(
                slow_search_log_enabled=True, slow_search_log_group=slow_logs,
                slow_index_log_enabled=True, slow_index_log_group=slow_logs,
                app_log_enabled=True, app_log_group=app_logs,
            ),
            removal_policy=removal,
        )

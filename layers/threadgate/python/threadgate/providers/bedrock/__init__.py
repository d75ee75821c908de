"""Amazon Bedrock through the Converse / ConverseStream API (boto3, the function's IAM role: no
provider key). `translate` maps the canonical Anthropic shape to Converse and back, `errors`
maps botocore failures to domain errors, `client` is the `ModelProvider`."""

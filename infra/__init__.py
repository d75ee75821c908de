"""CDK app for the AWS shape of Threadgate (see DESIGN.md "Streaming on AWS")."""

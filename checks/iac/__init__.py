"""Infrastructure-as-code state: what the deployment tool's own records say about the service's stacks."""

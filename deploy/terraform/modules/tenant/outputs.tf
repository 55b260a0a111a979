output "api_url" {
  description = "The API and console (HTTPS; point a DNS name at the load balancer to match the certificate)."
  value       = "https://${aws_lb.api.dns_name}"
}

output "admin_token_secret_arn" {
  description = "The Secrets Manager secret holding the API's bearer token."
  value       = aws_secretsmanager_secret.admin_token.arn
}

output "bucket" {
  description = "The tenant's bucket (batch history, file sinks; run configs under configs_prefix)."
  value       = aws_s3_bucket.tenant.id
}

output "stream_arns" {
  description = "The tenant's Kinesis streams, by suffix."
  value       = { for k, s in aws_kinesis_stream.tenant : k => s.arn }
}

output "ledger_endpoint" {
  description = "The ledger's PostgreSQL URL (no password: the daemons read it from Secrets Manager)."
  value       = local.ledger_url
}

output "batch_state_machine_arn" {
  description = "Start a batch: aws stepfunctions start-execution --state-machine-arn <this> --input \"$(datafactory batch ... --plan sfn)\""
  value       = aws_sfn_state_machine.batch.arn
}

output "cluster_name" {
  description = "The ECS cluster of the tenant's daemons and batch tasks."
  value       = aws_ecs_cluster.tenant.name
}

output "kms_key_arn" {
  description = "The key of the tenant's data at rest."
  value       = aws_kms_key.tenant.arn
}

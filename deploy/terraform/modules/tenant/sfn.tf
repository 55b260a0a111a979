# Large batches: a Map over the shards, each an ECS task of `datafactory batch ... --shard K`,
# retried with backoff; then `--finish` writes the manifest. Start one with the input that
# `datafactory batch CONFIG --start ... --end ... --out s3://BUCKET/... --plan sfn` prints.

resource "aws_sfn_state_machine" "batch" {
  name     = "${local.name}-batch"
  role_arn = aws_iam_role.states.arn
  definition = templatefile("${path.module}/../../../stepfunctions/batch.asl.json.tftpl", {
    cluster_arn         = aws_ecs_cluster.tenant.arn
    task_definition_arn = aws_ecs_task_definition.task["batch"].arn
    container_name      = local.container
    subnets             = var.private_subnet_ids
    security_groups     = [aws_security_group.tasks.id]
    max_concurrency     = var.batch_max_concurrency
    max_attempts        = var.batch_max_attempts
  })
  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.states.arn}:*"
    include_execution_data = true
    level                  = "ERROR"
  }
  tracing_configuration {
    enabled = true
  }
  encryption_configuration {
    type                              = "CUSTOMER_MANAGED_KMS_KEY"
    kms_key_id                        = aws_kms_key.tenant.arn
    kms_data_key_reuse_period_seconds = 300
  }
  tags = local.tags
}

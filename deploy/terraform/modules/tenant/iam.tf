# Least privilege: the execution role pulls the image, writes the tenant's log groups and reads
# its three secrets; the task role writes only the tenant's streams and bucket prefix; the
# state machine runs only the batch task definition, passes only these two roles.

data "aws_iam_policy_document" "ecs_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.tenant}-df-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "execution" {
  dynamic "statement" {
    for_each = var.image_repository_arn == null ? [] : [var.image_repository_arn]
    content {
      sid       = "PullTheImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [statement.value]
    }
  }
  dynamic "statement" {
    for_each = var.image_repository_arn == null ? [] : [1]
    content {
      sid       = "RegistryLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"] # GetAuthorizationToken has no resource-level permissions
    }
  }
  statement {
    sid     = "TenantLogs"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${aws_cloudwatch_log_group.daemon.arn}:*",
      "${aws_cloudwatch_log_group.batch.arn}:*",
    ]
  }
  statement {
    sid       = "TenantSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = compact([aws_secretsmanager_secret.admin_token.arn, aws_secretsmanager_secret.state_key.arn, local.ledger_secret_arn])
  }
  statement {
    sid       = "TenantKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.tenant.arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "tenant"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name_prefix        = "${var.tenant}-df-task-"
  assume_role_policy = data.aws_iam_policy_document.ecs_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "task" {
  dynamic "statement" {
    for_each = length(aws_kinesis_stream.tenant) > 0 ? [1] : []
    content {
      sid = "TenantStreams"
      actions = [
        "kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary",
        "kinesis:DescribeStream", "kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords",
      ]
      resources = [for s in aws_kinesis_stream.tenant : s.arn]
    }
  }
  statement {
    sid       = "TenantBucketList"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.tenant.arn]
  }
  statement {
    sid = "TenantPrefixWrite"
    actions = [
      "s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.tenant.arn}/${var.data_prefix}*"]
  }
  statement {
    sid       = "TenantConfigsRead"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.tenant.arn}/${var.configs_prefix}*"]
  }
  statement {
    sid       = "TenantKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.tenant.arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "tenant"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# -- the state machine ------------------------------------------------------------------------

data "aws_iam_policy_document" "states_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "states" {
  name_prefix        = "${var.tenant}-df-states-"
  assume_role_policy = data.aws_iam_policy_document.states_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "states" {
  statement {
    sid       = "RunBatchShards"
    actions   = ["ecs:RunTask"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account}:task-definition/${aws_ecs_task_definition.task["batch"].family}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.tenant.arn]
    }
  }
  statement {
    sid       = "FollowBatchShards"
    actions   = ["ecs:StopTask", "ecs:DescribeTasks"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account}:task/${aws_ecs_cluster.tenant.name}/*"]
  }
  statement {
    sid       = "PassTheTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
  statement {
    sid       = "WaitForTasks" # the rule Step Functions manages for .sync ECS tasks
    actions   = ["events:PutTargets", "events:PutRule", "events:DescribeRule"]
    resources = ["arn:${local.partition}:events:${local.region}:${local.account}:rule/StepFunctionsGetEventsForECSTaskRule"]
  }
  statement {
    sid = "DeliverExecutionLogs" # these log-delivery actions have no resource-level permissions
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "Traces" # X-Ray segments have no resource-level permissions
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "states" {
  name   = "tenant"
  role   = aws_iam_role.states.id
  policy = data.aws_iam_policy_document.states.json
}

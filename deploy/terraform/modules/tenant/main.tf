# One tenant's Data Factory: its daemons on ECS Fargate behind an HTTPS load balancer, its
# ledger (PostgreSQL), its bucket and Kinesis streams, a Step Functions state machine for
# large batches, and IAM that lets its tasks touch only what is the tenant's.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  name      = "${var.tenant}-datafactory"
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.region
  partition = data.aws_partition.current.partition
  tags = merge(var.tags, {
    tenant      = var.tenant
    run_owner   = var.run_owner
    cost_centre = var.cost_centre
    managed_by  = "terraform"
    application = "datafactory"
  })
  container = "datafactory"
  port      = 9400
}

# One key for the tenant's data at rest: bucket, streams, logs, secrets, ledger.
resource "aws_kms_key" "tenant" {
  description             = "${local.name}: data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = local.tags
}

resource "aws_kms_alias" "tenant" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.tenant.key_id
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is the key itself, and its principals are this account and the logs service for the tenant's log groups
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is the key itself (AWS requires it so), not every resource
  #checkov:skip=CKV_AWS_109:the account administers its own key (the AWS default key policy); nothing outside the account is granted
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" is this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "TenantLogGroups"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"] # in a key policy, "*" is this key
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/datafactory/${var.tenant}/*"]
    }
  }
}

resource "aws_cloudwatch_log_group" "daemon" {
  name              = "/datafactory/${var.tenant}/daemon"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.tenant.arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "batch" {
  name              = "/datafactory/${var.tenant}/batch"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.tenant.arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "states" {
  name              = "/datafactory/${var.tenant}/states"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.tenant.arn
  tags              = local.tags
}

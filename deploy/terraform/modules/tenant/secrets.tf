# The API's admin token: made by Terraform as an ephemeral value and written to Secrets
# Manager through a write-only argument, so it is in neither the plan nor the state. The
# daemons read it from the secret; operators fetch it with
#   aws secretsmanager get-secret-value --secret-id <output admin_token_secret_arn>

ephemeral "random_password" "admin_token" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "admin_token" {
  #checkov:skip=CKV2_AWS_57:the daemons read the token at start; rotate by bumping admin_token_version and redeploying (README, Deploy per tenant)
  name_prefix             = "${local.name}-admin-token-"
  description             = "Bearer token of ${var.tenant}'s Data Factory API (mutating calls)."
  kms_key_id              = aws_kms_key.tenant.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "admin_token" {
  secret_id                = aws_secretsmanager_secret.admin_token.id
  secret_string_wo         = ephemeral.random_password.admin_token.result
  secret_string_wo_version = var.admin_token_version
}

variable "admin_token_version" {
  description = "Bump to make and store a new admin token (then redeploy the daemons)."
  type        = number
  default     = 1
}

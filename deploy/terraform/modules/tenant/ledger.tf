# The ledger: runs, checkpoints, journals and shard leases, shared by the tenant's daemons.
# RDS PostgreSQL unless an existing one is given (ledger_url). RDS keeps the password in
# Secrets Manager itself (manage_master_user_password): it is never in Terraform's state.

locals {
  create_ledger = var.ledger_url == null
  ledger_url = (
    local.create_ledger
    ? "postgresql://datafactory@${aws_db_instance.ledger[0].address}:${aws_db_instance.ledger[0].port}/datafactory?sslmode=require"
    : var.ledger_url
  )
  ledger_secret_arn = (
    local.create_ledger ? aws_db_instance.ledger[0].master_user_secret[0].secret_arn : var.ledger_password_secret_arn
  )
}

resource "aws_db_subnet_group" "ledger" {
  count      = local.create_ledger ? 1 : 0
  name       = "${local.name}-ledger"
  subnet_ids = var.private_subnet_ids
  tags       = local.tags
}

resource "aws_db_parameter_group" "ledger" {
  count  = local.create_ledger ? 1 : 0
  name   = "${local.name}-ledger"
  family = "postgres17"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  tags = local.tags
}

resource "aws_db_instance" "ledger" {
  count                               = local.create_ledger ? 1 : 0
  identifier_prefix                   = "${local.name}-"
  engine                              = "postgres"
  engine_version                      = "17"
  instance_class                      = var.ledger_instance_class
  allocated_storage                   = 20
  max_allocated_storage               = 200
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.tenant.arn
  db_name                             = "datafactory"
  username                            = "datafactory"
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = aws_kms_key.tenant.arn
  iam_database_authentication_enabled = true
  db_subnet_group_name                = aws_db_subnet_group.ledger[0].name
  parameter_group_name                = aws_db_parameter_group.ledger[0].name
  vpc_security_group_ids              = [aws_security_group.ledger.id]
  publicly_accessible                 = false
  multi_az                            = var.ledger_multi_az
  backup_retention_period             = 7
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${local.name}-ledger-final"
  auto_minor_version_upgrade          = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.tenant.arn
  monitoring_interval                 = 60
  monitoring_role_arn                 = aws_iam_role.rds_monitoring[0].arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  tags                                = local.tags
}

resource "aws_iam_role" "rds_monitoring" {
  count              = local.create_ledger ? 1 : 0
  name_prefix        = "${var.tenant}-df-rds-mon-"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "rds_monitoring_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count      = local.create_ledger ? 1 : 0
  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

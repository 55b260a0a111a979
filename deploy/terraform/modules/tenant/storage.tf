# The tenant's bucket (batch history, file sinks, run configs) and Kinesis streams.

resource "aws_s3_bucket" "tenant" {
  #checkov:skip=CKV_AWS_144:cross-region replication is the tenant's choice; its data is simulated and can be made again from the seed
  #checkov:skip=CKV2_AWS_62:nothing consumes event notifications of simulated data; a tenant adds them with its own pipeline
  #checkov:skip=CKV_AWS_21:versioning is a variable (bucket_versioning): simulated data can be made again from its seed, so it is off unless the tenant wants it
  #checkov:skip=CKV_AWS_18:access logs need a log bucket the tenant's organisation owns; add one with aws_s3_bucket_logging beside this module
  bucket_prefix = "${local.name}-"
  force_destroy = false
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "tenant" {
  bucket                  = aws_s3_bucket.tenant.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "tenant" {
  bucket = aws_s3_bucket.tenant.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "tenant" {
  bucket = aws_s3_bucket.tenant.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.tenant.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "tenant" {
  bucket = aws_s3_bucket.tenant.id
  versioning_configuration {
    status = var.bucket_versioning ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "tenant" {
  bucket = aws_s3_bucket.tenant.id
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
  rule {
    id     = "expire-ephemeral-test-data"
    status = "Enabled"
    filter {
      prefix = var.ephemeral_prefix
    }
    expiration {
      days = var.ephemeral_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_policy" "tenant" {
  bucket = aws_s3_bucket.tenant.id
  policy = data.aws_iam_policy_document.bucket.json
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "TLSOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.tenant.arn, "${aws_s3_bucket.tenant.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_kinesis_stream" "tenant" {
  for_each         = var.kinesis_streams
  name             = "${local.name}-${each.key}"
  shard_count      = each.value > 0 ? each.value : null
  retention_period = var.kinesis_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.tenant.arn
  stream_mode_details {
    stream_mode = each.value > 0 ? "PROVISIONED" : "ON_DEMAND"
  }
  tags = local.tags
}

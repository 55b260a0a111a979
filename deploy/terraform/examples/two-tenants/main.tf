# Two tenants, each with its own Data Factory, in one account and VPC.
#   terraform init && terraform apply -var-file=example.tfvars

terraform {
  required_version = ">= 1.11"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { deployed_with = "datafactory/deploy/terraform" }
  }
}

variable "region" {
  description = "The AWS region of both tenants."
  type        = string
  default     = "eu-west-1"
}

variable "vpc_id" {
  description = "The VPC both tenants live in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (two or more zones)."
  type        = list(string)
}

variable "image" {
  description = "The Data Factory image, by digest (ACCOUNT.dkr.ecr.REGION.amazonaws.com/datafactory@sha256:...)."
  type        = string
}

variable "image_repository_arn" {
  description = "Its ECR repository."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for the tenants' API endpoints."
  type        = string
}

module "acme" {
  source                   = "../../modules/tenant"
  tenant                   = "acme"
  run_owner                = "acme-data-platform"
  cost_centre              = "cc-1042"
  vpc_id                   = var.vpc_id
  private_subnet_ids       = var.private_subnet_ids
  load_balancer_subnet_ids = var.private_subnet_ids
  allowed_cidrs            = ["10.20.0.0/16"]
  certificate_arn          = var.certificate_arn
  image                    = var.image
  image_repository_arn     = var.image_repository_arn
  daemons                  = 3
  kinesis_streams          = { pos = 2, telemetry = 0 }
  start_runs               = ["retail"]
}

module "globex" {
  source                   = "../../modules/tenant"
  tenant                   = "globex"
  run_owner                = "globex-dlq-team"
  cost_centre              = "cc-2077"
  vpc_id                   = var.vpc_id
  private_subnet_ids       = var.private_subnet_ids
  load_balancer_subnet_ids = var.private_subnet_ids
  allowed_cidrs            = ["10.30.0.0/16", "192.168.10.0/24"]
  certificate_arn          = var.certificate_arn
  image                    = var.image
  image_repository_arn     = var.image_repository_arn
  daemons                  = 1
  ledger_multi_az          = false
  kinesis_streams          = { claims = 1 }
  ephemeral_days           = 3
}

output "acme" {
  description = "acme's endpoints"
  value = {
    api_url       = module.acme.api_url
    bucket        = module.acme.bucket
    state_machine = module.acme.batch_state_machine_arn
  }
}

output "globex" {
  description = "globex's endpoints"
  value = {
    api_url       = module.globex.api_url
    bucket        = module.globex.bucket
    state_machine = module.globex.batch_state_machine_arn
  }
}

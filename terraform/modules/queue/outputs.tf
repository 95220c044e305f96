output "queue_url" {
  description = "URL of the jobs queue (the `queue_url` given to the gateway)."
  value       = aws_sqs_queue.this.url
}

output "queue_arn" {
  description = "ARN of the jobs queue."
  value       = aws_sqs_queue.this.arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "kms_key_arn" {
  description = "Key that encrypts both queues (as configured on the jobs queue)."
  value       = aws_sqs_queue.this.kms_master_key_id
}

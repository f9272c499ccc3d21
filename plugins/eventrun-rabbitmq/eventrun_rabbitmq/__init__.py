"""RabbitMQ for eventrun."""

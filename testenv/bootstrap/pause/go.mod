// The pod sandbox ("pause") process of the real test node; no dependencies.
module rocketmq-dojo/bootstrap/pause

go 1.24.0

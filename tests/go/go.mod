module agentlockgo

go 1.19

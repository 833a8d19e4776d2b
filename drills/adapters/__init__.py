"""Adapters: the only code in drills that touches a cloud, a cluster or a server.

Each interface is a small Protocol in `drills.adapters.base`; each has an AWS implementation and a
test/local implementation beside it:

  StackAdapter     pulumi_stack.AutomationStackAdapter (Automation API) | local_stack.LocalStackAdapter (YAML files)
  Route53Adapter   route53.Boto3Route53                                 | route53.ModelledRoute53
                                                                        |   (moto + health/DNS models)
  S3Adapter        s3.Boto3S3                                           | s3.ReplicatingS3 (moto + replication model)
  CapacityAdapter  capacity.EksCapacity (EKS API + Kubernetes API)      | capacity.EksCapacity(pods=StaticPods) on moto
  ProbeAdapter     probes.TritonHttpProbe (Triton V2 HTTP), with a SystemResolver (AWS) or a PolicyResolver (models)
  FaultAdapter     faults.KubernetesFaults, faults.HealthCheckInversion | tests' server toggles;
                                                                        |   the rehearsal's processes
"""

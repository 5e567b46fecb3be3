"""The site controller: decides, for every device of every rig, whether it mines, serves
inference or sleeps, from the energy price, the hashprice, inference demand and the grid.

- `controller.model`: the policy's input (a `Snapshot`) and output (a `Decision`), and the
  policy's memory, all immutable.
- `controller.policy`: the controller's policy, a pure function
  `decide(snapshot, memory, config) -> (decision, memory)`.
- `controller.anchors`: the field's rules as pure functions of the same signature.
- `controller.sim`: the site replay (`rigsite replay`), which drives those same functions.

The controller never imports the agent: it talks to rigs through the client library.
"""

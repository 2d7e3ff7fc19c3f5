"""Network front doors that put a Cascade pipeline behind a protocol clients already speak
(``cascade serve``): one conversation per connection, models shared by the pipeline."""

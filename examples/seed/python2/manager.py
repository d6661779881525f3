# /usr/bin/env python
# -*- coding: utf-8 -*-

import Queue
from multiprocessing.managers import BaseManager

task_queue = Queue.Queue()
result_queue = Queue.Queue()

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue', callable=lambda: task_queue)
QueueManager.register('get_result_queue', callable=lambda: result_queue)

manager = QueueManager(address=('', 5000), authkey='lihui')
manager.start()
task = manager.get_task_queue()
result = manager.get_result_queue()

for i in range(10):
    print 'Put: %d => worker' % i
    task.put(i)

print 'Waiting for results ...'

for i in range(10):
    r = result.get(timeout=10)
    print 'Get: %s <= worker' % r

manager.shutdown()
print 'manager exit'
